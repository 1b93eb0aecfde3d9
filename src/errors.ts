/** The message of a caught value: err.message for an Error, else String(err). */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
