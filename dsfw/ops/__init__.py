"""Operations beside the pipeline: admin endpoints, metrics, logging set-up, the decision recorder."""
