"""Agent Sandbox policy pack: ``policies`` holds the rules, ``__main__`` serves them to the engine."""
