"""Turning source into slugs: receive (git), build (buildpacks in a build container), pack, store.

- ``slug``: the slug file format (pack, check, read, unpack); standard library only, dynoctl uses it;
- ``slug_store``: the server's verified slugs by sha256, unpacked once for their dynos;
- ``archive``: the hardened extractor for archives from outside (source tarballs, slugs);
- ``builds``: build records, their output log, and ``Builder`` (one build start to end);
- ``build_output``: what a build prints, split into lines and framed the Heroku way;
- ``events``: what a build reports to the API's stream and its readers (git's hook, dynoctl), typed;
- ``buildpack``: buildpack detection, install, and compile in the build container;
- ``container``: the build container, started by the dyno manager's spawner;
- ``git``: git receive over SSH and the push's build request; ``keys``: SSH authorized keys;
- ``slugignore``: .slugignore.

Each public name below is imported from its module on first use (dynod/exports.py), so
``import dynod.builds.slug`` stays free of the builder, trio and the daemon.
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "SLUG_LIMIT": "slug",
    "SlugInfo": "slug",
    "pack_directory": "slug",
    "read_members": "slug",
    "scan_process_types": "slug",
    "unpack_slug": "slug",
    "SlugStore": "slug_store",
    "Extractor": "archive",
    "remove_tree": "archive",
    "unpack_source": "archive",
    "BuildDirs": "builds",
    "BuildRecord": "builds",
    "BuildStore": "builds",
    "Builder": "builds",
    "BuildOutputSplitter": "build_output",
    "BuildEvent": "events",
    "BuildFailed": "events",
    "BuildFinished": "events",
    "BuildOutput": "events",
    "decode_build_event": "events",
    "BuildError": "buildpack",
    "BuildTimeout": "buildpack",
    "CompileResult": "buildpack",
    "builtin_buildpacks": "buildpack",
    "check_buildpack_ref": "buildpack",
    "compile_app": "buildpack",
    "SpawnerBuildContainer": "container",
    "create_repo": "git",
    "delete_repo": "git",
    "AuthorizedKeys": "keys",
    "parse_public_key": "keys",
    "apply_slugignore": "slugignore",
}, globals())
