"""What a person looks at: diagram, featuremaps, inference paths, filter sheets and report."""
