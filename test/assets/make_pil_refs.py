"""Regenerates pil_refs.json and cmyk.jpg, the Pillow reference outputs used by test/data.test.ts.

Run with Pillow 9.4 (the version behind the reference accuracies), from this folder:
    python3 make_pil_refs.py
"""
import base64, json
import numpy as np
from PIL import Image


def pixels(w, h):
    """Hash-like bytes, reproduced in the test as Math.imul(i, 2654435761) >>> 24."""
    i = np.arange(w * h * 3, dtype=np.uint64)
    return ((i * 2654435761) & 0xFFFFFFFF) >> 24


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode()


FILTERS = {'bicubic': Image.BICUBIC, 'bilinear': Image.BILINEAR}
CASES = [  # (w, h) -> (width, height): down, up, vertical only, horizontal only, mixed
    (23, 17, 11, 8, 'bicubic'),
    (23, 17, 31, 23, 'bicubic'),
    (23, 17, 23, 9, 'bicubic'),
    (23, 17, 7, 17, 'bilinear'),
    (37, 29, 64, 13, 'bilinear'),
]
resize = []
for w, h, width, height, f in CASES:
    img = Image.fromarray(pixels(w, h).astype(np.uint8).reshape(h, w, 3))
    out = np.asarray(img.resize((width, height), FILTERS[f]))
    resize.append(dict(w=w, h=h, width=width, height=height, filter=f, expected=b64(out)))

cmyk = Image.fromarray(pixels(8, 6).astype(np.uint8).reshape(6, 8, 3)).convert('CMYK')
cmyk.save('cmyk.jpg', quality=90)
cmyk_rgb = np.asarray(Image.open('cmyk.jpg').convert('RGB'))

json.dump(dict(pillow=Image.__version__, resize=resize, cmyk=dict(file='cmyk.jpg', rgb=b64(cmyk_rgb))),
          open('pil_refs.json', 'w'), indent=1)
