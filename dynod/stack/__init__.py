"""The stack: the shared, read-only base root filesystem every dyno and build runs on.

- ``definition``: a stack's TOML definition, parsed and checked, and the digest naming its tree (pure);
- ``etc_files``: the dyno account and the container's network files written into /etc (pure);
- ``bootstrap``: debootstrap and apt, which make the tree (the I/O, behind the ``Bootstrap`` seam);
- ``tree``: a built or half-built tree on disk (its size, its removal past leftover mounts);
- ``store``: the built stacks, one directory per definition digest, built once under a lock;
- ``command``: ``python -m dynod.stack build|path|list``.
"""

from ..exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "BUILDER_VERSION": "definition",
    "DEFAULT_STACK": "definition",
    "StackDefinition": "definition",
    "StackUser": "definition",
    "definition_hash": "definition",
    "extended_name": "definition",
    "is_stack_name": "definition",
    "parse_definition": "definition",
    "stack_key": "definition",
    "container_resolv_conf": "etc_files",
    "with_account": "etc_files",
    "Bootstrap": "bootstrap",
    "Progress": "bootstrap",
    "apt_steps": "bootstrap",
    "build_namespace_argv": "bootstrap",
    "debootstrap_argv": "bootstrap",
    "finish_rootfs": "bootstrap",
    "run_debootstrap": "bootstrap",
    "disk_usage": "tree",
    "mounts_beneath": "tree",
    "remove_tree": "tree",
    "METADATA_FILE": "store",
    "ROOTFS_DIR_ENV": "store",
    "StackStore": "store",
    "default_definitions_dir": "store",
    "main": "command",
}, globals())
