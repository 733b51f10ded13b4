"""A local GCS emulator (gcp-storage-emulator) that gs:// paths reach through fsspec/gcsfs."""

import contextlib
import os

import fsspec
import portpicker


@contextlib.contextmanager
def emulator(bucket: str = "bench"):
  """Serves an in-memory GCS; yields "gs://<bucket>"."""
  from gcp_storage_emulator.server import create_server
  port = portpicker.pick_unused_port()
  server = create_server("localhost", port, in_memory=True, default_bucket=bucket)
  server.start()
  old = os.environ.get("STORAGE_EMULATOR_HOST")
  os.environ["STORAGE_EMULATOR_HOST"] = f"http://localhost:{port}"
  try:
    yield f"gs://{bucket}"
  finally:
    server.stop()
    if old is None:
      os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
      os.environ["STORAGE_EMULATOR_HOST"] = old


def upload(local_dir, url: str):
  """Copies a local folder to url (gs://bucket/prefix)."""
  fs = fsspec.filesystem("gs")
  for root, _, files in os.walk(local_dir):
    for f in files:
      src = os.path.join(root, f)
      fs.put_file(src, f"{url}/{os.path.relpath(src, local_dir)}")
