from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer

from .events import record


def who(scope):
    user = scope["user"]
    return user.username if user.is_authenticated else "anonymous"


class EchoConsumer(WebsocketConsumer):
    """A sync consumer (Channels runs it in a thread)."""

    def connect(self):
        if self.scope["query_string"] == b"raise":
            raise RuntimeError("boom in connect")
        self.accept()
        self.send(text_data="hello %s" % who(self.scope))

    def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            self.send(bytes_data=bytes_data[::-1])
        elif text_data == "boom":
            raise RuntimeError("boom in a consumer")
        elif text_data == "close":
            self.close(code=4001)
        else:
            self.send(text_data="echo: %s" % text_data)

    def disconnect(self, code):
        record("echo %s disconnect %s" % (who(self.scope), code))


class ChatConsumer(AsyncWebsocketConsumer):
    """An async consumer in a group: what one socket sends, every socket
    in the room gets, through the channel layer."""

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.name = self.scope["query_string"].decode() or who(self.scope)
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(
            self.room, {"type": "chat.message", "text": "%s: %s" % (self.name, text_data)})

    async def chat_message(self, event):
        await self.send(text_data=event["text"])

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room, self.channel_name)
        record("chat %s disconnect %s" % (self.name, code))
