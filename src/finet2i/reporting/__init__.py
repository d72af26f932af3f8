"""Plumbing of the ``report`` stage (``finet2i.stages.report``), one module per seam.

``funnel`` sums the stages' stats JSONs and sets them beside the paper's funnel; ``distributions`` reads the
packaged samples' indexes into the paper's tables; ``tables`` holds the table model shared by both;
``figures`` draws the paper's figures (matplotlib, imported only when drawing); ``render`` writes the tables
and figures as Markdown and as a self-contained HTML page (a Jinja2 template, imported only when rendering).
Importing this package stays light: no matplotlib, no jinja2.
"""
