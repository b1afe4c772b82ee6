"""Built-in components, registered through the same hooks third-party plugins implement.

Each module here is a plugin; :data:`xaibench.plugins.DEFAULT_PLUGINS` lists them. They register
lazy ``"module:Class"`` targets, so loading them imports nothing heavy.
"""
