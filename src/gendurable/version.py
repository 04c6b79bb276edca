"""The version of this gendurable: its one source, read by the build (hatch), the package's
`gendurable.__version__`, `gendurable --version`, the migrator's record and the node rows."""

__version__ = "0.1.0"
