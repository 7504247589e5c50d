"""`curator review`: the faces in a FiftyOne dataset and the App, tags back into the table.

`session` (the command), `scope` (which faces go into the dataset: `--faces`), `db` (MongoDB and dataset
naming), `dataset` (building and syncing the dataset, its views and maps), `samples` (sample documents written
in bulk), `tags` (tags back into the table), `app` (the App's server on loopback), `server` (FiftyOne's server
as `app` runs it, in a process of its own).
"""
