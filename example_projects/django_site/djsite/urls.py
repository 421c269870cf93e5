"""URLs of the example site."""

from django.urls import path

from djsite import views

urlpatterns = [
    path("", views.index),
    path("cached-page/", views.cached_page),
    path("invalidate/", views.invalidate_pages),
    path("fragment/", views.fragment),
    path("fragment/invalidate/", views.invalidate_fragment),
    path("lowlevel/<slug:name>/", views.lowlevel),
    path("async-lowlevel/<slug:name>/", views.async_lowlevel),
    path("session/", views.session_visits),
    path("square/<int:n>/", views.square_view),
    path("counters/", views.counters),
]
