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
 */
import { compareIds, type PageRequest } from '../../store/fleet-reads.js'

export interface PagePositionsOptions {
  /** Listings (endpoint and filters) remembered at once. */
  listings?: number
  /** Rows remembered per listing. */
  perListing?: number
  /** How long a row is remembered after its page was served, ms. */
  ttlMs?: number
  now?: () => number
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
  private readonly now: () => number

  constructor(options: PagePositionsOptions = {}) {
    this.listings = options.listings ?? 64
    this.perListing = options.perListing ?? 256
    this.ttlMs = options.ttlMs ?? 60_000
    this.now = options.now ?? Date.now
  }

  /**
   * How to read `limit` rows of `listing` from `offset`: after the nearest remembered row before
   * it, if any — unless that row is not the one just before the page and `total` (the listing's
   * rows, where known) says the page is nearer the end: then by its offset alone, which a store
   * can walk from the end. (The page right after a served one always continues from it.)
   */
  request(listing: string, offset: number, limit: number, total?: number): PageRequest {
    const positions = this.current(listing)
    if (!positions) return offset > 0 ? { offset, limit } : { limit }
    // the last position whose `next` is at most `offset`
    let lo = 0
    let hi = positions.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (positions[mid]!.next <= offset) lo = mid + 1
      else hi = mid
    }
    const from = positions[lo - 1]
    if (!from) return offset > 0 ? { offset, limit } : { limit }
    const skip = offset - from.next
    if (skip === 0) return { after: from.after, limit }
    return total !== undefined && total - offset - limit < skip ? { offset, limit } : { after: from.after, offset: skip, limit }
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
