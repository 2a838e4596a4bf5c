"""Portal pages of images. The upload page posts to the images API (POST /api/v1/images/) with a
progress bar; without JS, the same form posts there too and the API's answer is shown."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from accounts.scoping import default_project, projects_of
from images.visibility import images_visible_to


@login_required
def image_list(request):
    images = images_visible_to(request.user).select_related("project")
    return render(request, "images/image_list.html", {"images": images})


@login_required
def image_detail(request, uuid):
    image = get_object_or_404(images_visible_to(request.user).select_related("project"), uuid=uuid)
    return render(request, "images/image_detail.html", {"image": image})


@login_required
def image_upload(request):
    return render(request, "images/image_upload.html", {
        "projects": projects_of(request.user), "default_project": default_project(request.user),
    })
