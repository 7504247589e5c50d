"""`curator review`: the faces in a FiftyOne dataset and the App, tags back into the table.

`session` (the command), `db` (MongoDB and dataset naming), `dataset` (building and syncing the dataset, its
views and maps), `tags` (tags back into the table), `app` (the App's server on loopback).
"""
