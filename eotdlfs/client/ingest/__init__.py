"""The ingestion engine: plan an ingest as data (`plan`), then run it against a repository (`engine`)."""

from eotdlfs.client.ingest.engine import IngestResult, folder_name, ingest_folder, run_ingest
from eotdlfs.client.ingest.plan import Carry, Drop, IngestPlan, SourceFile, Upload, plan_ingest

__all__ = ["Carry", "Drop", "IngestPlan", "IngestResult", "SourceFile", "folder_name",
           "Upload", "ingest_folder", "plan_ingest", "run_ingest"]
