"""`helios dashboard`: runs at a glance in a browser (Starlette app, server-sent events, static page).

`app.py` (routes, SSE, cancel with a same-origin token), `views.py` (what is shown, as models),
`media.py` (chunk thumbnails with ffmpeg, local copies of outputs), `server.py` (uvicorn on a bound
socket), `static/` (the page).
"""
