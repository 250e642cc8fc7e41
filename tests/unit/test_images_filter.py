"""The hub's image list made from notebook_images_list (filter_plugins/clusterhub_images.py)."""

from clusterhub_images import clusterhub_sif_images


def test_apptainer_images_become_form_entries_with_their_sif_path():
    images = [
        {"name": "python", "display_name": "Python 3", "engines": ["apptainer", "docker"]},
        {"name": "course"},
        {"name": "gpu", "engines": ["docker"]},
    ]
    assert clusterhub_sif_images(images, "/opt/clusterhub/images/") == [
        {"name": "python", "display_name": "Python 3", "path": "/opt/clusterhub/images/python.sif"},
        {"name": "course", "display_name": "course", "path": "/opt/clusterhub/images/course.sif"},
    ]


def test_no_images_no_entries():
    assert clusterhub_sif_images(None, "/x") == []
