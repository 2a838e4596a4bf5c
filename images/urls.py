from django.urls import path

from images import views

urlpatterns = [
    path("images/", views.image_list, name="images"),
    path("images/upload/", views.image_upload, name="image-upload"),
    path("images/<uuid:uuid>/", views.image_detail, name="image"),
]
