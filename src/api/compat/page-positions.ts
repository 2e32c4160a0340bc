/**
 * Where the rows of recently served EMQX v4 pages were, so that the next page costs a keyset step
 * instead of an offset walk. EMQX v4 pages by number (`_page`, `_limit`): page n is the rows from
 * offset (n − 1) × limit, which a store can only find by walking every row before it. A tool
 * paging through the fleet asks for page n + 1 right after page n, so each served page's last
 * row is remembered — per listing (the endpoint and its filters), as "the rows from offset
 * `next` on are those after `after`" — and a page from an offset at or past a remembered one is
 * read after that row, skipping only the difference: none for the next page, a few pages' worth
 * for a jump near a page served before. A page with no remembered row before it is an offset
 * from the start, as before; so is a jump nearer the end of an unfiltered listing than to any
 * remembered row, which the store walks from the end (its total says where that is).
 *
 * What a remembered row means ages as the fleet changes: a walk in order continues from the row
 * it last saw, so it neither repeats nor skips rows while sessions before it come and go (an
 * offset would shift by them); a jump is counted from where that row was when it was served.
 * So rows are remembered for a short while (`ttlMs`), a newer one replaces any that disagree
 * with it (an earlier position with a later row, or the reverse), and a page served from the
 * start puts its own row in place. Bounded: `listings` listings, `perListing` rows each, the
 * least recently used listing and the oldest rows going first.
 *
 * Each replica remembers the pages it served; a page asked of another replica is an offset walk
 * there (still correct, not as cheap).
 *
 * A tool that jumps around a large listing (page 5,000, then 3,120, then 7,800) finds no served
 * page near most of its jumps: each would walk hundreds of thousands of rows. So the first jump
 * whose walk would pass `marksFrom` rows or more also has the listing's *marks* learned, where the
 * store can tell them (whole listings, whose total is known: FleetReads.marks): the cursor of
 * every `every`-th row, `every` chosen so a listing has at most `maxMarks` of them. It is one walk
 * of the whole listing (at 1,000,000 sessions ~0.2 s of PostgreSQL, about what eight walks to its
 * middle cost), made in the background — the jump that asked is served as before, and a long jump
 * arriving meanwhile waits for the marks rather than walk beside the walk that learns them — and
 * from then on, until the marks are `ttlMs` old, any page starts at most `every` rows past a mark.
 * Marks age as remembered rows do: sessions coming and going before a mark shift the pages
 * counted from it until they are learned again.
 */
import { compareIds, type PageRequest } from '../../store/fleet-reads.js'

/** Fewest rows between two marks: closer than a page, a mark would save less than it costs to hold. */
const PAGE_ROWS = 100

export interface PagePositionsOptions {
  /** Listings (endpoint and filters) remembered at once. */
  listings?: number
  /** Rows remembered per listing. */
  perListing?: number
  /** How long a row is remembered after its page was served, and marks after they were learned, ms. */
  ttlMs?: number
  /** Rows a page's walk would pass from which the listing's marks are worth learning. */
  marksFrom?: number
  /** Most marks of one listing: they are spread evenly over it, a page apart at least. */
  maxMarks?: number
  /** Told when a listing's marks could not be learned (pages are then offset walks, as before). */
  onMarksFailed?: (error: unknown) => void
  now?: () => number
}

/**
 * The cursors of every `every`-th row of a whole listing, in its order: rows every − 1,
 * 2 × every − 1, … (FleetReads.marks).
 */
export type MarkSource = (every: number) => Promise<string[]>

interface Marks {
  every: number
  /** cursors[k] is the row at offset (k + 1) × every − 1; empty while being learned, or after failing. */
  cursors: readonly string[]
  /** When they were asked for: a listing's marks are learned again once they are ttlMs old. */
  at: number
  /** While they are being learned: settles when they are (or failed). */
  learning?: Promise<void>
}

interface Position {
  /** The offset of the row after `after`. */
  next: number
  /** The cursor of the row at `next − 1` (a session id, or a topic row's `topicCursor`). */
  after: string
  /** When its page was served. */
  at: number
}

export class PagePositions {
  private readonly byListing = new Map<string, Position[]>()
  private readonly listings: number
  private readonly perListing: number
  private readonly ttlMs: number
  private readonly marksFrom: number
  private readonly maxMarks: number
  private readonly onMarksFailed: (error: unknown) => void
  private readonly now: () => number
  /** Marks of whole listings (few: one per endpoint), least recently asked first. */
  private readonly marksOf = new Map<string, Marks>()

  constructor(options: PagePositionsOptions = {}) {
    this.listings = options.listings ?? 64
    this.perListing = options.perListing ?? 256
    this.ttlMs = options.ttlMs ?? 60_000
    this.marksFrom = options.marksFrom ?? 20_000
    this.maxMarks = options.maxMarks ?? 1_000
    this.onMarksFailed = options.onMarksFailed ?? (() => undefined)
    this.now = options.now ?? Date.now
  }

  /**
   * How to read `limit` rows of `listing` from `offset`: after the nearest remembered row or mark
   * before it, if any — unless that row is not the one just before the page and `total` (the
   * listing's rows, where known) says the page is nearer the end: then by its offset alone, which
   * a store can walk from the end. (The page right after a served one always continues from it.)
   * `marks`, for a whole listing: where its marks can be learned, should this page's walk be long.
   */
  async request(listing: string, offset: number, limit: number, total?: number, marks?: MarkSource): Promise<PageRequest> {
    let from = this.nearestBefore(listing, offset)
    let skip = from ? offset - from.next : offset
    // the rows this page's walk would pass: from the row before it, or from the nearer end
    if (marks && total !== undefined && Math.min(skip, total - offset - limit) >= this.marksFrom) {
      const learning = this.learnMarks(listing, total, marks)
      if (learning) {
        // being learned for an earlier jump: waiting costs less than a walk beside the one learning them
        await learning
        from = this.nearestBefore(listing, offset)
        skip = from ? offset - from.next : offset
      }
    }
    if (!from) return offset > 0 ? { offset, limit } : { limit }
    if (skip === 0) return { after: from.after, limit }
    return total !== undefined && total - offset - limit < skip ? { offset, limit } : { after: from.after, offset: skip, limit }
  }

  /** The served row or mark nearest before `offset` (the largest `next` at most `offset`), if any. */
  private nearestBefore(listing: string, offset: number): { next: number; after: string } | undefined {
    const positions = this.current(listing) ?? []
    // the last position whose `next` is at most `offset`
    let lo = 0
    let hi = positions.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (positions[mid]!.next <= offset) lo = mid + 1
      else hi = mid
    }
    const served = positions[lo - 1]
    const marks = this.liveMarks(listing)
    const k = marks ? Math.min(Math.floor(offset / marks.every), marks.cursors.length) : 0
    if (k === 0) return served
    const mark = { next: k * marks!.every, after: marks!.cursors[k - 1]! }
    return served && served.next >= mark.next ? served : mark
  }

  private liveMarks(listing: string): Marks | undefined {
    const marks = this.marksOf.get(listing)
    return marks && marks.cursors.length > 0 && marks.at >= this.now() - this.ttlMs ? marks : undefined
  }

  /**
   * Starts learning `listing`'s marks in the background, unless they are known or failed within
   * ttlMs (undefined: the caller walks); while they are being learned, the promise of their end.
   */
  private learnMarks(listing: string, total: number, source: MarkSource): Promise<void> | undefined {
    const known = this.marksOf.get(listing)
    if (known && known.at >= this.now() - this.ttlMs) return known.learning
    const every = Math.max(PAGE_ROWS, Math.ceil(total / this.maxMarks))
    const at = this.now()
    const learning: Marks = {
      every,
      cursors: [],
      at,
      learning: source(every).then(
        (cursors) => {
          // unless forgotten (or asked again) meanwhile
          if (this.marksOf.get(listing) === learning) this.marksOf.set(listing, { every, cursors, at })
        },
        (error: unknown) => {
          // no marks until ttlMs from the ask: pages are walked meanwhile
          if (this.marksOf.get(listing) === learning) this.marksOf.set(listing, { every, cursors: [], at })
          this.onMarksFailed(error)
        }
      )
    }
    this.marksOf.delete(listing)
    this.marksOf.set(listing, learning)
    if (this.marksOf.size > this.listings) this.marksOf.delete(this.marksOf.keys().next().value!)
    return undefined
  }

  /** A page of `rows` rows from `offset` of `listing` was served; `last` is the cursor of its last row. */
  served(listing: string, offset: number, rows: number, last: string | undefined): void {
    if (rows === 0 || last === undefined) return
    const next = offset + rows
    const kept = (this.current(listing) ?? []).filter(
      // one row per position, and positions in the order of their rows
      (p) => p.next !== next && (p.next < next ? compareIds(p.after, last) < 0 : compareIds(p.after, last) > 0)
    )
    let at = kept.findIndex((p) => p.next > next)
    if (at < 0) at = kept.length
    kept.splice(at, 0, { next, after: last, at: this.now() })
    if (kept.length > this.perListing) {
      let oldest = 0
      for (let i = 1; i < kept.length; i++) if (kept[i]!.at < kept[oldest]!.at) oldest = i
      kept.splice(oldest, 1)
    }
    this.byListing.delete(listing)
    this.byListing.set(listing, kept)
    if (this.byListing.size > this.listings) this.byListing.delete(this.byListing.keys().next().value!)
  }

  /** The unexpired positions of `listing`, which becomes the most recently used; undefined when none. */
  private current(listing: string): Position[] | undefined {
    const positions = this.byListing.get(listing)
    if (!positions) return undefined
    const since = this.now() - this.ttlMs
    const live = positions.some((p) => p.at < since) ? positions.filter((p) => p.at >= since) : positions
    this.byListing.delete(listing)
    if (live.length === 0) return undefined
    this.byListing.set(listing, live)
    return live
  }
}
