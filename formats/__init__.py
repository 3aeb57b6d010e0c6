"""File formats: reading sources and gold files, the snapshot line format, exports, Label
Studio imports, and the leakage rule they share.

Pure: nothing here imports Temporal, the catalog (SQLAlchemy), boto3 or the activities,
workflows and worker packages. Callers open the bytes (a local file, an S3 object) and store
the results; this package only reads, checks and writes formats.
"""
