"""Streams an uploaded image straight into the upload directory, hashing it on the way.

Django's default handlers keep small files in memory and put large ones in the system temp
directory; this handler writes every chunk (64 KiB) to a file in UNCLOUD_IMAGE_UPLOAD_DIR, so an
image is never held in memory and never lands outside our own directory. Install it on the
request before anything reads the body (see images/api/views.py).
"""

import hashlib
import os
import tempfile

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile

from images.validation import upload_dir


class StreamedImageFile(UploadedFile):
    """An upload on disk, with its size and sha256 computed while it arrived."""

    def __init__(self, path: str, name: str, size: int, sha256: str):
        super().__init__(open(path, "rb"), name=name, content_type="application/octet-stream", size=size)
        self.path = path
        self.sha256 = sha256

    def temporary_file_path(self) -> str:
        return self.path

    def discard(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class ImageUploadHandler(FileUploadHandler):
    chunk_size = 64 * 1024

    def __init__(self, request=None):
        super().__init__(request)
        self.too_large = False
        self._file = None
        self._path = None

    @property
    def max_bytes(self) -> int:
        return settings.UNCLOUD_IMAGE_MAX_UPLOAD_GIB * 1024**3

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        descriptor, self._path = tempfile.mkstemp(prefix="incoming-", suffix=".part", dir=upload_dir())
        self._file = os.fdopen(descriptor, "wb")
        self._digest = hashlib.sha256()
        self._size = 0

    def receive_data_chunk(self, raw_data, start):
        self._size += len(raw_data)
        if self._size > self.max_bytes:
            self.too_large = True
            self._discard()
            raise SkipFile()
        self._file.write(raw_data)
        self._digest.update(raw_data)
        return None  # consumed: no later handler sees the data

    def file_complete(self, file_size):
        self._file.close()
        uploaded = StreamedImageFile(self._path, self.file_name, self._size, self._digest.hexdigest())
        self._file = self._path = None
        return uploaded

    def upload_interrupted(self):
        self._discard()

    def discard_partial(self) -> None:
        """Remove the file being written when the body could not be read to its end."""
        self._discard()

    def _discard(self):
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
            self._path = None
