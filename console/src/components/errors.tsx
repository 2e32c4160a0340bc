/** An error to show where it happened, or nothing. */
export function ErrorLine(props: { error: string | null | undefined }) {
  if (!props.error) return null
  return (
    <p class="error" role="alert">
      {props.error}
    </p>
  )
}

export const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))
