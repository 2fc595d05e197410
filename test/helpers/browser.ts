import { chromium } from 'playwright-core'
import type { Browser } from 'playwright-core'
import { CHROMIUM, find } from './programs'

/**
 * Headless Chromium for the browser tests (declare them with `needs(CHROMIUM)`). Background networking is off: this
 * machine's network is closed, and Chromium's own calls home would be refused.
 */
export async function launchChromium (): Promise<Browser> {
  return await chromium.launch({
    executablePath: find(CHROMIUM),
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync']
  })
}
