"""Drives Tollgate's Admin API with aio-kong (a Python Kong client from PyPI): create, list
with paging, update, delete and errors, plus the client's own apply_json configuration.
Usage: python aiokong_client.py <admin url>. Prints one line per check and
"N passed, N failed"; exits 1 when a check failed."""

import asyncio
import sys

from kong.client import Kong, KongResponseError

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok  ", name)
    else:
        failed += 1
        print("FAIL", name, detail)


async def status_of(coro):
    """The HTTP status of the KongResponseError a call raises (0 when it succeeds)."""
    try:
        await coro
    except KongResponseError as e:
        return e.status, e.message
    return 0, None


async def main(url):
    async with Kong(url) as cli:
        # Create.
        for i in range(5):
            s = await cli.services.create(
                name=f"py-{i}", host="upstream.example", tags=["aiokong"]
            )
            check(f"create py-{i}", s.name == f"py-{i}" and s["port"] == 80, s)
        # List with paging: aio-kong follows `next`.
        seen = [s.name async for s in cli.services.paginate(size=2, tags="aiokong")]
        check("paginate sees each service once", sorted(seen) == [f"py-{i}" for i in range(5)], seen)
        page = await cli.services.get_list(size=2)
        check("one page holds size entries", len(page) == 2, page)
        full = await cli.services.get_full_list()
        check("full list", len(full) == 5, full)

        # Update and read back, by name and by id.
        s0 = await cli.services.get("py-0")
        up = await cli.services.update(s0.id, path="/v2", retries=1)
        check("update by id", up["path"] == "/v2" and up["retries"] == 1, up)
        again = await cli.services.get(s0.id)
        check("update persisted", again["path"] == "/v2", again)
        check("has() by name", await cli.services.has("py-0"))
        check("has() is false for a missing name", not await cli.services.has("py-none"))

        # Nested: routes and plugins of a service, consumers and key-auth credentials.
        route = await s0.routes.create(name="py-route", paths=["/py"])
        check("route created under its service", route["service"]["id"] == s0.id, route)
        routes = await s0.routes.get_list()
        check("routes of the service", [r.name for r in routes] == ["py-route"], routes)
        plugin = await s0.plugins.create(name="key-auth", config={"key_names": ["k"]})
        check("plugin for the service", plugin["service"]["id"] == s0.id, plugin)
        consumer = await cli.consumers.create(username="py-user")
        cred = await consumer.keyauths.create_credentials(data={"key": "py-secret"})
        check("key-auth credential (form body)", cred["key"] == "py-secret", cred)
        cred2 = await consumer.keyauths.create_or_update_credentials({"key": "py-secret"})
        check("create_or_update finds the existing key", cred2["id"] == cred["id"], cred2)

        # Errors: Kong's status codes and messages.
        code, msg = await status_of(cli.services.get("py-none"))
        check("missing entity is 404", code == 404, msg)
        code, msg = await status_of(cli.services.create(name="py-0", host="x"))
        check("duplicate name is 409", code == 409 and "unique" in msg.get("message", "").lower(), msg)
        code, msg = await status_of(cli.services.create(name="py-bad", host="x", port=70000))
        check("invalid port is 400 with a field error", code == 400 and "port" in msg.get("fields", {}), msg)
        code, msg = await status_of(
            cli.plugins.create(name="key-auth", config={"nope": True})
        )
        check("unknown plugin field is 400", code == 400, msg)

        # aio-kong's own declarative apply: services with routes and plugins.
        await cli.apply_json(
            {
                "services": [
                    {
                        "name": "py-applied",
                        "host": "applied.example",
                        "routes": [{"name": "py-applied-route", "paths": ["/applied"]}],
                        "plugins": [{"name": "request-termination", "config": {"status_code": 418}}],
                    }
                ]
            }
        )
        applied = await cli.services.get("py-applied")
        check("apply_json created the service", applied["host"] == "applied.example", applied)
        ps = await applied.plugins.get_list()
        check("apply_json attached the plugin", [p["name"] for p in ps] == ["request-termination"], ps)

        # Delete: aio-kong deletes a service's routes and plugins first.
        await consumer.keyauths.delete(cred["id"])
        await cli.consumers.delete(consumer.id)
        for s in await cli.services.get_full_list():
            await cli.services.delete(s.id)
        check("every service deleted", await cli.services.get_full_list() == [])
        check("their routes went with them", await cli.routes.get_full_list() == [])
        check("and their plugins", await cli.plugins.get_full_list() == [])

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: aiokong_client.py <admin url>")
    sys.exit(asyncio.run(main(sys.argv[1])))
