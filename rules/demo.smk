# The embedded demo only (config/demo.yaml: `demo: true`; the Snakefile includes this file for it): the demo
# lists its Pexels and Pixabay sources from local fake APIs (finet2i.demo.fake_apis) in their documented shapes.
# Their key is set for the listing jobs, and their server is started before the first job.

from finet2i.demo.fake_apis import demo_environment, ensure_demo_server

demo_environment()


# This onstart replaces the Snakefile's (Snakemake keeps the last one), so it repeats its check.
onstart:
    ensure_demo_server()
    check_available(config, base_dir=".", files=CONFIG_FILES)
