"""The training-set workspace: a captioned folder to review, fix and export (``Workspace``); the app's Dataset tab
and the ``captions`` commands only call it."""
