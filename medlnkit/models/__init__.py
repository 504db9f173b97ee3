"""Model builders for the kit's two architectures, one builder per profile."""
