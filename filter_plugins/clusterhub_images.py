"""Filters that connect the notebook_images role to the hub's image list."""

from __future__ import annotations


def clusterhub_sif_images(images: list, sif_dir: str) -> list[dict]:
    """The hub form's image list (name, display_name, path) for the Apptainer images of notebook_images_list."""
    out = []
    for image in images or []:
        if "apptainer" not in image.get("engines", ["apptainer"]):
            continue
        name = image["name"]
        out.append(
            {
                "name": name,
                "display_name": image.get("display_name", name),
                "path": f"{sif_dir.rstrip('/')}/{name}.sif",
            }
        )
    return out


class FilterModule:
    def filters(self):
        return {"clusterhub_sif_images": clusterhub_sif_images}
