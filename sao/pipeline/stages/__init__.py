"""One file per pipeline stage that is not a source's own (sources bring theirs: sao/sources)."""
