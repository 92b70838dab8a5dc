"""laion-clap imports this module and uses none of it."""
