/**
 * One page at a time of a native listing: the hub's `limit` and `cursor`, previous pages
 * remembered by their cursors. Nothing asks for more than the page shown.
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks'
import { messageOf } from '../components/errors'
import type { Page } from '../api/types'

export interface PageStep {
  cursor?: string
  /** The last id of the page before (where this page's ids start after). */
  afterId?: string
}

export interface Paged<T> {
  rows: T[]
  setRows: (update: (rows: T[]) => T[]) => void
  step: PageStep
  /** The last id the hub put on this page when another follows. */
  untilId?: string
  pageNumber: number
  hasPrev: boolean
  hasNext: boolean
  loading: boolean
  error: string | null
  next: () => void
  prev: () => void
  reload: () => void
}

export interface PagedHooks<T> {
  /** Told when a page is asked for. */
  loading?(): void
  /** What the page shows of the rows the hub answered (the events that came meanwhile applied). */
  loaded?(rows: T[], range: { afterId?: string; untilId?: string }): T[]
}

/** `load` asks for one page; a change of `key` (the filters) starts again at the first page. */
export function usePaged<T extends { id: string }>(load: (cursor: string | undefined) => Promise<Page<T>>, key: string, hooks: PagedHooks<T> = {}): Paged<T> {
  const [steps, setSteps] = useState<PageStep[]>([{}])
  const [rows, setRowsState] = useState<T[]>([])
  const [next, setNext] = useState<{ cursor: string; untilId: string } | null>(null)
  const [loading, setLoading] = useState(false)
  const [error, setError] = useState<string | null>(null)
  const [generation, setGeneration] = useState(0)
  const loadRef = useRef(load)
  loadRef.current = load
  const hooksRef = useRef(hooks)
  hooksRef.current = hooks

  const keyRef = useRef(key)
  useEffect(() => {
    if (keyRef.current === key) return
    keyRef.current = key
    setSteps([{}])
  }, [key])

  const step = steps[steps.length - 1] ?? {}
  useEffect(() => {
    let current = true
    setLoading(true)
    hooksRef.current.loading?.()
    loadRef
      .current(step.cursor)
      .then((page) => {
        if (!current) return
        const last = page.data.at(-1)
        const more = page.next !== null && last ? { cursor: page.next, untilId: last.id } : null
        setRowsState(hooksRef.current.loaded?.(page.data, { afterId: step.afterId, untilId: more?.untilId }) ?? page.data)
        setNext(more)
        setError(null)
      })
      .catch((e: unknown) => current && setError(messageOf(e)))
      .finally(() => current && setLoading(false))
    return () => {
      current = false
    }
  }, [step, generation])

  return {
    rows,
    setRows: useCallback((update: (rows: T[]) => T[]) => setRowsState(update), []),
    step,
    untilId: next?.untilId,
    pageNumber: steps.length,
    hasPrev: steps.length > 1,
    hasNext: next !== null,
    loading,
    error,
    next: () => next && setSteps((s) => [...s, { cursor: next.cursor, afterId: next.untilId }]),
    prev: () => setSteps((s) => (s.length > 1 ? s.slice(0, -1) : s)),
    reload: useCallback(() => setGeneration((g) => g + 1), [])
  }
}
