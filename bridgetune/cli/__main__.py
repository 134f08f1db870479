from bridgetune.cli import app

app()
