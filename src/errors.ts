// One reading of a caught value for logs and refusals: `catch (err)` gives `unknown`, and a
// thrown non-Error (a string, a rejected promise's reason) must still say something.
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
