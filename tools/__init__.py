"""Developer tools, not installed with usr_es: `python -m tools.replay_fixtures` (`make fixtures`) and
`python -m tools.clidoc` (`make docs`)."""
