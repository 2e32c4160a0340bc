/** Previous/next over a paged listing (the hub's cursor paging: nothing counts or loads the whole list). */
export function Pager(props: { page: number; hasPrev: boolean; hasNext: boolean; onPrev: () => void; onNext: () => void; shown: number; loading: boolean }) {
  return (
    <div class="pager">
      <button type="button" disabled={!props.hasPrev || props.loading} onClick={props.onPrev}>
        ‹ Previous
      </button>
      <span>
        page {props.page} · {props.shown} shown{props.loading ? ' · loading…' : ''}
      </span>
      <button type="button" disabled={!props.hasNext || props.loading} onClick={props.onNext}>
        Next ›
      </button>
    </div>
  )
}
