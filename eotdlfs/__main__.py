from eotdlfs.cli import app

app()
