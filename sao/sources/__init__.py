"""Where recordings come from: the shipped sample corpus, the loopback replicas, the crawlers."""
