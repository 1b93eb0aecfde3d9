// The exit status that asks systemd to start the agent again: a config.apply or its revert
// (src/fleet/), an update or its rollback (src/update/). The unit restarts on it because of
// Restart=on-failure (only 2, a configuration error, is RestartPreventExitStatus): 75 is
// EX_TEMPFAIL, "try again", which is what it means here.
export const restartExitCode = 75;
