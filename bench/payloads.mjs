// Realistic, varied JSON for the compression measurements: a seeded PRNG draws names, words, ids, timestamps and
// numbers, so every message differs from the last the way an application's do (one repeated string would compress
// to almost nothing with context takeover and flatter every setting).

const WORDS = ('the a to and of in is it you that for on with this be are was have not but at we can so just what ' +
  'all get if do my your out like up one about now there when more they how here time new go see no all know ' +
  'think good great sure thanks ok yes right back today tomorrow meeting deploy build release review merge ' +
  'branch test fix bug issue ticket server client socket message room channel team design update status ' +
  'ready done later maybe please check look nice cool agree idea plan ship launch lunch coffee call minute ' +
  'hour week morning afternoon night weekend again still already soon first last next before after while ' +
  'because though really pretty quite very much many some any every each other same different').split(' ')
const FIRST = ['Ada', 'Alan', 'Grace', 'Linus', 'Margaret', 'Ken', 'Barbara', 'Dennis', 'Frances', 'John', 'Radia',
  'Edsger', 'Donald', 'Hedy', 'Tim', 'Katherine', 'Niklaus', 'Sophie', 'Guido', 'Yukihiro', 'Anders', 'Brendan',
  'Rasmus', 'Bjarne', 'Leslie', 'Shafi', 'Whitfield', 'Vint', 'Jean', 'Carol']
const LAST = ['Lovelace', 'Turing', 'Hopper', 'Torvalds', 'Hamilton', 'Thompson', 'Liskov', 'Ritchie', 'Allen',
  'Backus', 'Perlman', 'Dijkstra', 'Knuth', 'Lamarr', 'Berners-Lee', 'Johnson', 'Wirth', 'Wilson', 'van Rossum',
  'Matsumoto', 'Hejlsberg', 'Eich', 'Lerdorf', 'Stroustrup', 'Lamport', 'Goldwasser', 'Diffie', 'Cerf', 'Sammet',
  'Shaw']
const STATUS = ['online', 'away', 'busy', 'idle', 'in-game', 'spectating']
const ITEMS = ['sword', 'shield', 'potion', 'bow', 'arrow', 'helmet', 'boots', 'ring', 'amulet', 'scroll', 'gem']
const EVENTS = ['joined', 'left', 'scored', 'picked-up', 'dropped', 'hit', 'healed', 'respawned', 'levelled-up']

/** mulberry32: small, fast, and the same sequence for the same seed in every process. */
export function prng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * A source of messages of one kind: `next()` returns a fresh JSON string each call. As in an application, the
 * people and rooms recur (ids, names, items) while what they say and the numbers about them change.
 * chat ≈ 200 B (a line someone typed), state ≈ 2 KiB (a room's players), snapshot ≈ 32 KiB (a whole room).
 */
export function messages (kind, seed = 1) {
  const random = prng(seed)
  const int = (n) => Math.floor(random() * n)
  const pick = (list) => list[int(list.length)]
  const id = (prefix) => `${prefix}_${Math.floor(random() * 2 ** 40).toString(36)}`
  const sentence = (min, max) => Array.from({ length: min + int(max - min + 1) }, () => pick(WORDS)).join(' ')
  let seq = int(1_000_000)
  let now = 1_764_000_000_000 + int(1e9)
  const people = Array.from({ length: 1000 }, () => ({
    id: id('p'),
    name: `${pick(FIRST)} ${pick(LAST)}`,
    x: Math.round(random() * 100_000) / 100,
    y: Math.round(random() * 100_000) / 100,
    hp: int(101),
    score: int(100_000),
    status: pick(STATUS),
    level: 1 + int(60),
    items: Array.from({ length: 1 + int(4) }, () => pick(ITEMS)),
    lastSeen: now - int(600_000)
  }))
  const rooms = Array.from({ length: 40 }, (_, i) => ({ name: `room-${100 + i * 7}`, topic: sentence(4, 10), offset: int(people.length) }))
  const roster = (room, size) => Array.from({ length: size }, (_, i) => people[(room.offset + i) % people.length])
  // A tick of the game: a player moves, is hit, scores, comes and goes.
  const move = (p) => {
    p.x = Math.round((p.x + random() * 20 - 10) * 100) / 100
    p.y = Math.round((p.y + random() * 20 - 10) * 100) / 100
    if (random() < 0.3) p.hp = Math.max(0, Math.min(100, p.hp + int(21) - 10))
    if (random() < 0.2) p.score += int(500)
    if (random() < 0.05) p.status = pick(STATUS)
    p.lastSeen = now - int(5000)
    return p
  }
  const brief = (p) => ({ id: p.id, name: p.name, x: p.x, y: p.y, hp: p.hp, score: p.score, status: p.status })
  const kinds = {
    chat: () => {
      const from = pick(people)
      return JSON.stringify({ type: 'chat', id: id('m'), room: pick(rooms).name, from: { id: from.id, name: from.name }, text: sentence(8, 20), ts: now })
    },
    state: () => {
      const room = pick(rooms)
      return JSON.stringify({ type: 'state', room: room.name, seq, ts: now, players: roster(room, 19).map((p) => brief(move(p))) })
    },
    snapshot: () => {
      const room = pick(rooms)
      const players = roster(room, 162).map(move)
      return JSON.stringify({
        type: 'snapshot',
        room: room.name,
        seq,
        ts: now,
        topic: room.topic,
        players,
        events: Array.from({ length: 60 }, () => ({ at: now - int(60_000), who: pick(players).id, what: pick(EVENTS), note: sentence(2, 6) }))
      })
    }
  }
  const make = kinds[kind]
  if (make === undefined) throw new Error(`unknown message kind ${kind}`)
  return {
    next () {
      seq++
      now += 1 + int(250)
      return make()
    }
  }
}

export const KINDS = ['chat', 'state', 'snapshot']
