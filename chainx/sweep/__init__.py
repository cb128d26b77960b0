"""chainx sweep: many trials (regions) of one model, each chain against baselines."""
