# The embedded demo only (config/demo.yaml: `demo: true`; the Snakefile includes this file for it): the demo
# lists its Pexels and Pixabay sources from local fake APIs (finet2i.demo.fake_apis) in their documented shapes.
# Their key is set for the listing jobs; their server is started (or joined) before the first job, and handed
# back when the run ends, however it ends: the server exits once no run uses it, and its port is free again.

from finet2i.demo.fake_apis import (
    demo_environment,
    ensure_demo_server,
    release_demo_server,
)

demo_environment()
DEMO_LEASE = []  # this run's lease on the fake APIs' server (taken by onstart)


def start_demo_sources():
    DEMO_LEASE.append(ensure_demo_server())


def stop_demo_sources():
    while DEMO_LEASE:
        freed = release_demo_server(DEMO_LEASE.pop())
        print(f"demo: handed the fake photo APIs back ("
              f"{'server stopped, port free' if freed else 'another run still uses them'})")


# This onstart replaces the Snakefile's (Snakemake keeps the last one), so it repeats its check.
onstart:
    start_demo_sources()
    check_before_the_first_job()


onsuccess:
    stop_demo_sources()


onerror:
    stop_demo_sources()
