"""api/images.py: image_data and [img-N] markers, image headers read (and bounded) before the
engine decodes anything; every mistake a 400 naming the image."""
from __future__ import annotations

import base64
import re
import struct

import pytest

from images import bmp, jpeg, png, png_header
from llamacy.api.images import (MAX_IMAGE_SIDE, MAX_REQUEST_PIXELS, NO_IMAGES, ImageInput, chat_images,
                                check_image_sizes, image_size, parse_image_data, place_images)
from llamacy.errors import InvalidRequestError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_image_size_reads_each_accepted_format():
    assert image_size(png(7, 5, (1, 2, 3))) == (7, 5)
    assert image_size(bmp(3, 4, (1, 2, 3))) == (3, 4)
    assert image_size(jpeg(20, 12, 200, stripe=30)) == (20, 12)
    assert image_size(b"GIF89a" + struct.pack("<HH", 640, 480) + b"\x00" * 8) == (640, 480)
    top_down = bytearray(bmp(3, 4, (1, 2, 3)))
    top_down[22:26] = struct.pack("<i", -4)
    assert image_size(bytes(top_down)) == (3, 4)
    for bad in (b"plain text", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xd9", b"RIFF....WEBPVP8 "):
        with pytest.raises(ValueError):
            image_size(bad)


def test_sizes_are_bounded_before_decoding():
    check_image_sizes([ImageInput("id 1", png_header(MAX_IMAGE_SIDE, 2))])
    with pytest.raises(InvalidRequestError, match=rf"image id 2 is {MAX_IMAGE_SIDE + 1}x1 pixels"):
        check_image_sizes([ImageInput("id 1", png(2, 2, (0, 0, 0))),
                           ImageInput("id 2", png_header(MAX_IMAGE_SIDE + 1, 1))])
    with pytest.raises(InvalidRequestError, match="image id 3 is 0x5 pixels"):
        check_image_sizes([ImageInput("id 3", png_header(0, 5))])
    side = MAX_IMAGE_SIDE
    n = MAX_REQUEST_PIXELS // (side * side)
    check_image_sizes([ImageInput(f"id {i}", png_header(side, side)) for i in range(n)])
    with pytest.raises(InvalidRequestError, match=f"more than {MAX_REQUEST_PIXELS} pixels in all .at image id {n}."):
        check_image_sizes([ImageInput(f"id {i}", png_header(side, side)) for i in range(n + 1)])
    with pytest.raises(InvalidRequestError, match="image messages.0..content.1.: not a PNG, JPEG, GIF or BMP"):
        check_image_sizes([ImageInput("messages[0].content[1]", b"GIF8")])


def test_parse_image_data_and_place_the_markers():
    images = parse_image_data({"image_data": [{"data": b64(b"A"), "id": 12}, {"data": b64(b"B"), "id": 3}]})
    assert images == {12: b"A", 3: b"B"}
    text, order = place_images("x [img-3] y [img-12] z [img-3]", images, "<m>")
    assert text == "x <m> y <m> z <m>"
    assert [i.name for i in order] == ["id 3", "id 12", "id 3"]
    assert parse_image_data({}) == {} and parse_image_data({"image_data": []}) == {}


@pytest.mark.parametrize("image_data, needle", [
    ("x", "'image_data' must be an array"),
    ([1], "'image_data[0]' must be an object"),
    ([{"data": "QQ=="}], "'image_data[0].id' must be an integer"),
    ([{"data": "QQ==", "id": True}], "'image_data[0].id' must be an integer"),
    ([{"data": "QQ==", "id": -1}], "'image_data[0].id' must be an integer"),
    ([{"data": "QQ==", "id": 10 ** 9}], "'image_data[0].id' must be an integer"),
    ([{"data": "QQ==", "id": 1}, {"data": "QQ==", "id": 1}], "two images with id 1"),
    ([{"data": "not base64!", "id": 4}], "'image_data' id 4: 'data' is not valid base64"),
    ([{"data": "", "id": 4}], "'image_data' id 4: 'data' is empty"),
    ([{"data": 7, "id": 4}], "'image_data' id 4: 'data' must be a base64 string"),
    ([{"data": "QQ==", "id": i} for i in range(17)], "17 images, more than 16"),
])
def test_bad_image_data_is_a_400(image_data, needle):
    with pytest.raises(InvalidRequestError) as info:
        parse_image_data({"image_data": image_data})
    assert needle in info.value.message


def test_markers_and_images_must_match():
    with pytest.raises(InvalidRequestError, match=r"\[img-2\] has no image in 'image_data' with id 2"):
        place_images("a [img-2]", {1: b"x"}, "<m>")
    with pytest.raises(InvalidRequestError, match=r"'image_data' id 1 has no \[img-1\] marker"):
        place_images("a [img-2]", {1: b"x", 2: b"y"}, "<m>")
    with pytest.raises(InvalidRequestError, match="reserves for images"):
        place_images("a <m> [img-1]", {1: b"x"}, "<m>")


def test_chat_image_parts_without_a_projector():
    text_only = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert chat_images(text_only, None) == (text_only, [])
    with pytest.raises(InvalidRequestError, match=re.escape(NO_IMAGES)):
        chat_images([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}], None)
