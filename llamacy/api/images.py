"""Images in requests: the native ``image_data`` + ``[img-N]`` markers, OpenAI ``image_url`` parts.

``/completion``, ``/infill`` and ``/embedding`` take ``image_data: [{"data": BASE64, "id": N}]``
and a prompt that names each image where it goes with ``[img-N]``; ``/v1/chat/completions``
takes content parts ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,…"}}``,
placed where the chat template puts the message's content. Either way the prompt becomes text
holding the engine's media marker once per image, in order, and the images are decoded by the
engine (stb_image inside libmtmd) — see ``Vision.tokenize``. Every mistake is a 400 that names
the image.
"""
from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from typing import Any

from llamacy.errors import InvalidRequestError
from llamacy.serving import multimodal

NO_IMAGES = "this model does not accept images (start the server with --mmproj)"
MARKER = re.compile(r"\[img-(\d{1,9})\]")
DATA_URL = re.compile(r"data:(image/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)
MAX_IMAGES = 16                     # per request (each takes a slice of the context)
MAX_IMAGE_BYTES = 20 << 20          # per image, encoded
MAX_IMAGE_SIDE = 8192               # pixels, read from the file's header before it is decoded:
MAX_REQUEST_PIXELS = 1 << 26        # a small file can hold a huge image (decoded: 3 bytes a pixel)


@dataclass(frozen=True)
class ImageInput:
    """One image of a request: the name the client gave it, and its file's bytes."""

    name: str                       # "id 12" (image_data) or "messages[1].content[0]" (chat)
    data: bytes


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidRequestError(f"{where} must be a base64 string")
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidRequestError(f"{where} is larger than {MAX_IMAGE_BYTES >> 20} MiB")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{where} is not valid base64") from None
    if not data:
        raise InvalidRequestError(f"{where} is empty")
    return data


def parse_image_data(body: dict) -> dict[int, bytes]:
    """``image_data`` → {id: image bytes}; absent or empty → {}."""
    value = body.get("image_data")
    if value is None or value == []:
        return {}
    if not isinstance(value, list):
        raise InvalidRequestError("'image_data' must be an array of {\"data\": base64, \"id\": integer}")
    if len(value) > MAX_IMAGES:
        raise InvalidRequestError(f"'image_data' has {len(value)} images, more than {MAX_IMAGES}")
    images: dict[int, bytes] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequestError(f"'image_data[{i}]' must be an object {{\"data\": base64, \"id\": integer}}")
        ident = item.get("id")
        if not isinstance(ident, int) or isinstance(ident, bool) or not 0 <= ident < 10 ** 9:
            raise InvalidRequestError(f"'image_data[{i}].id' must be an integer in [0, 10^9)")
        if ident in images:
            raise InvalidRequestError(f"'image_data' has two images with id {ident}")
        images[ident] = _b64(item.get("data"), f"'image_data' id {ident}: 'data'")
    return images


def place_images(prompt: str, images: dict[int, bytes], marker: str) -> tuple[str, list[ImageInput]]:
    """Replace each ``[img-N]`` of ``prompt`` by the engine's ``marker``; the images in the order
    they appear. A marker without data, or data without a marker, is a 400 naming the id."""
    if marker in prompt:
        raise InvalidRequestError(f"the prompt contains {marker!r}, which this server reserves for images")
    order: list[ImageInput] = []

    def sub(m: re.Match) -> str:
        ident = int(m.group(1))
        if ident not in images:
            raise InvalidRequestError(f"the prompt's [img-{ident}] has no image in 'image_data' with id {ident}")
        order.append(ImageInput(f"id {ident}", images[ident]))
        return marker

    text = MARKER.sub(sub, prompt)
    used = {int(m) for m in MARKER.findall(prompt)}
    for ident in images:
        if ident not in used:
            raise InvalidRequestError(f"'image_data' id {ident} has no [img-{ident}] marker in the prompt")
    if len(order) > MAX_IMAGES:
        raise InvalidRequestError(f"the prompt places {len(order)} images, more than {MAX_IMAGES}")
    return text, order


def chat_images(messages: Any, vision: "Vision | None") -> tuple[Any, list[ImageInput]]:
    """OpenAI content parts of type ``image_url`` (data: URLs) → text parts holding the engine's
    marker, and the images in order. Messages without image parts are returned as they are."""
    if not isinstance(messages, list):
        return messages, []
    out: list = []
    images: list[ImageInput] = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or not any(_is_image_part(p) for p in content):
            out.append(message)
            continue
        if vision is None:
            raise InvalidRequestError(NO_IMAGES)
        parts = []
        for j, part in enumerate(content):
            if not _is_image_part(part):
                if isinstance(part, dict) and isinstance(part.get("text"), str) and vision.marker in part["text"]:
                    raise InvalidRequestError(f"messages[{i}].content[{j}] contains {vision.marker!r}, which this "
                                              "server reserves for images")
                parts.append(part)
                continue
            where = f"messages[{i}].content[{j}]"
            images.append(ImageInput(where, _image_url_bytes(part, where)))
            parts.append({"type": "text", "text": vision.marker})
        out.append({**message, "content": parts})
    if len(images) > MAX_IMAGES:
        raise InvalidRequestError(f"the messages hold {len(images)} images, more than {MAX_IMAGES}")
    return out, images


def _is_image_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "image_url"


def _image_url_bytes(part: dict, where: str) -> bytes:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else None
    if not isinstance(url, str):
        raise InvalidRequestError(f"{where}.image_url must be {{\"url\": \"data:image/...;base64,...\"}}")
    if url[:8].lower().startswith(("http://", "https://")):
        raise InvalidRequestError(f"{where}: remote image URLs are not fetched by this server; send the image "
                                  "inline as a data URL (data:image/png;base64,...)")
    m = DATA_URL.match(url)
    if m is None:
        raise InvalidRequestError(f"{where}.image_url.url must be a base64 data URL (data:image/png;base64,...)")
    return _b64(url[m.end():], f"{where}.image_url.url")


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG, JPEG, GIF or BMP header — the formats accepted, so that an
    image's size is known (and bounded) before the engine decodes it. ValueError otherwise."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        (header,) = struct.unpack("<I", data[14:18])
        if header == 12:        # OS/2 BITMAPCOREHEADER: 16-bit sizes
            return struct.unpack("<HH", data[18:22])
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)      # a negative height: rows stored top-down
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    raise ValueError("not a PNG, JPEG, GIF or BMP image")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """A JPEG's size from its start-of-frame segment (SOF0…SOF15 but DHT, JPG and DAC)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:      # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):   # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    raise ValueError("a JPEG file without a frame header")


def check_image_sizes(images: list[ImageInput]) -> None:
    """Each image's header: a format the engine decodes, within the size bounds (400 naming it)."""
    total = 0
    for img in images:
        try:
            width, height = image_size(img.data)
        except ValueError as exc:
            raise InvalidRequestError(f"image {img.name}: {exc}") from None
        if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
            raise InvalidRequestError(f"image {img.name} is {width}x{height} pixels: each side must be 1 to "
                                      f"{MAX_IMAGE_SIDE}")
        total += width * height
        if total > MAX_REQUEST_PIXELS:
            raise InvalidRequestError(f"the request's images hold more than {MAX_REQUEST_PIXELS} pixels in all "
                                      f"(at image {img.name})")


@dataclass(frozen=True)
class Vision:
    """What the API layer needs of a loaded projector: its marker and a tokenizer of prompts with images."""

    projector: Any                  # engine.multimodal.Projector

    @property
    def marker(self) -> str:
        return self.projector.marker

    def tokenize(self, text: str, images: list[ImageInput], *, add_special: bool) \
            -> tuple[list[int], multimodal.MediaPrompt]:
        """Decode each image (a 400 naming the one that fails) and tokenize ``text`` with them."""
        check_image_sizes(images)
        decoded = []
        for img in images:
            try:
                decoded.append(self.projector.load_image(img.data, multimodal.image_id(img.data)))
            except ValueError as exc:
                raise InvalidRequestError(f"image {img.name}: {exc}") from None
        try:
            return multimodal.tokenize(self.projector, text, decoded, add_special=add_special)
        except ValueError as exc:
            raise InvalidRequestError(f"the prompt's images could not be used: {exc}") from None


def tokenize_with_images(vision: Vision | None, body: dict, prompt: Any, *, add_bos: bool, field: str = "prompt") \
        -> tuple[list[int], multimodal.MediaPrompt] | None:
    """A native request's ``image_data`` with its string ``prompt``; None when it has no images."""
    images = parse_image_data(body)
    if not images:
        return None
    if vision is None:
        raise InvalidRequestError(NO_IMAGES)
    if not isinstance(prompt, str):
        raise InvalidRequestError(f"with 'image_data', '{field}' must be a string holding [img-N] markers")
    text, order = place_images(prompt, images, vision.marker)
    return vision.tokenize(text, order, add_special=add_bos)
