"""DVC and stage pipelines around a build: dvc.yaml, stage lineage, upstream stage records. No torch."""
