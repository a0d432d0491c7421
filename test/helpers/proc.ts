// Process plumbing every test kind shares, with nothing heavy imported.

/** Ends a process by pid, quietly when it is gone already (never by name). */
export function killPid(pid: number | undefined | null): void {
  if (!pid) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}
