"""Models for the invalidation tests (``invalidate_on_change``): a product in
a category, with labels on the other side of a many-to-many relation."""

from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        app_label = "tests"


class Label(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        app_label = "tests"


class Product(models.Model):
    name = models.CharField(max_length=50)
    price = models.IntegerField(default=1)
    category = models.ForeignKey(Category, null=True, on_delete=models.SET_NULL)
    labels = models.ManyToManyField(Label, related_name="products")

    class Meta:
        app_label = "tests"
