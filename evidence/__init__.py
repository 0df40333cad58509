"""Statistics every other package may use: bootstrap confidence intervals and paired tests over
per-item scores. It imports nothing from this project, so probes, suites, reports and the gate all
stand on it (the one place where a test of "is this difference real?" is defined)."""
