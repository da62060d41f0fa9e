"""``dfe serve``: an upload page and a JSON API (v1) over one loaded Engine (extra ``serve``)."""
