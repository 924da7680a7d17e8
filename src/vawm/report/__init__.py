"""Reports: aggregation, tables in the papers' layouts, curves (``vawm report``)."""
