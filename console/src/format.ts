/** How values read on the page. */
export function since(iso: string | null | undefined): string {
  if (!iso) return ''
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  if (seconds < 60) return `${seconds} s ago`
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ago`
  return `${Math.floor(seconds / 86_400)} d ago`
}

export const time = (iso: string): string => new Date(iso).toLocaleTimeString()

export function rate(n: number | undefined | null): string {
  if (n === undefined || n === null) return '–'
  return n >= 100 ? Math.round(n).toLocaleString() : n.toFixed(1)
}

export function ms(seconds: number | null | undefined): string {
  if (seconds === undefined || seconds === null) return '–'
  return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`
}

export const count = (n: number | undefined): string => (n === undefined ? '–' : n.toLocaleString())
