"""The Snakemake side: config validation and the settings a rule passes (config), the adapter that
workflow scripts run through (adapter)."""
