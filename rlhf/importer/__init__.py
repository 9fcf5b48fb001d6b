"""Import prompts, model responses and preference labels from files into a project.

Public API: `import_file`, `import_records`, `ImportSummary`, `ImportFormatError`,
`DEFAULT_MAX_BYTES`. Formats and shapes: see `rlhf.importer.readers` and `rlhf.importer.shapes`;
how rows and tasks are written: `rlhf.importer.writer`.
"""

from rlhf.importer.core import DEFAULT_MAX_BYTES, import_file, import_records
from rlhf.importer.errors import ImportFormatError
from rlhf.importer.readers import SUPPORTED as SUPPORTED_FORMATS
from rlhf.importer.writer import ImportOptions, ImportSummary

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_FORMATS",
    "ImportFormatError",
    "ImportOptions",
    "ImportSummary",
    "import_file",
    "import_records",
]
