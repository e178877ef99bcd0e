"""Installs lumiere_jax with exact pins (requirements.txt); tests add requirements-test.txt."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent


def read_requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))]


setuptools.setup(
    name="lumiere_jax",
    version="0.1.0",
    description="Lumiere-style space-time diffusion video models in JAX/Flax",
    packages=setuptools.find_packages(include=["lumiere_jax", "lumiere_jax.*"]),
    # The tiny runs' caption vocabulary and pre-trained caption encoder (data/make_vocab.py, train/caption_encoder.py).
    package_data={"lumiere_jax": ["data/assets/*.model", "models/assets/*/*.json", "models/assets/*/*.safetensors"]},
    python_requires=">=3.11",
    install_requires=read_requirements("requirements.txt"),
    extras_require={"test": read_requirements("requirements-test.txt")},
    entry_points={"console_scripts": [
        "lumiere-train=lumiere_jax.train.cli:main",
        "lumiere-sample=lumiere_jax.sample.cli:main",
        "lumiere-export=lumiere_jax.export.cli:main",
        "lumiere-evaluate=lumiere_jax.evaluate.__main__:main",
        "lumiere-demo=lumiere_jax.demo:main",
    ]},
)
