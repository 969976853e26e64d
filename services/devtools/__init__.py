"""Developer tools: code generation and checks, not used at run time."""
