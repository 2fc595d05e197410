import { chromium } from 'playwright-core'
import type { Browser } from 'playwright-core'

// Debian's package (`apt-get install chromium`; .ci/run installs it). playwright-core never downloads a browser.
const EXECUTABLE = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/**
 * Headless Chromium for the browser tests. Background networking is off: this
 * machine's network is closed, and Chromium's own calls home would be refused.
 */
export function launchChromium (): Promise<Browser> {
  return chromium.launch({
    executablePath: EXECUTABLE,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync']
  }).catch((err: Error) => {
    throw new Error(`The browser tests need Chromium at ${EXECUTABLE} (apt-get install chromium, or set CHROMIUM_PATH): ${err.message}`)
  })
}
